from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Model training"

    def ready(self) -> None:
        from training import checks  # noqa: F401 - registers the system checks
