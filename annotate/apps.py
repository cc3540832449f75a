from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Crowd labels"

    def ready(self) -> None:
        from annotate.roles import connect_post_migrate

        connect_post_migrate()  # the viewer, curator, staff and admin groups always exist
