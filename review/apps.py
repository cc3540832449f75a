from django.apps import AppConfig


class ReviewConfig(AppConfig):
    """The curator's workbench: the crowd's labels, the model's opinion and the evidence on one
    screen. It sits above both apps it joins (annotate for the crowd, training for the model)."""

    name = "review"
    verbose_name = "Review"
