from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Model training"

    def ready(self) -> None:
        from annotate.services.datasets.export import lineage_model_register
        from annotate.services.datasets.records import record_source_register
        from training import checks, receivers  # noqa: F401 - checks registers system checks
        from training.selectors import model_version_lineage
        from training.services.proposals import proposal_records

        # Exports and releases of kind "proposals" are the model's, and so is the model version
        # their lineage names; annotate never imports us.
        record_source_register(kind="proposals", source=proposal_records)
        lineage_model_register(model_version_lineage)
        # The model-vs-crowd conflict flag follows aggregations, promotions and pool scorings.
        receivers.connect()
