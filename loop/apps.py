from django.apps import AppConfig


class LoopConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "loop"
    verbose_name = "Loop"

    def ready(self) -> None:
        from loop import receivers

        receivers.connect()
