"""Dataset, DatasetVersion and Example left for the datasets app (same tables): the state
forgets them here once every other app points at the new ones."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("experiments", "0002_training"),
        ("datasets", "0001_initial"),
        ("evaluation", "0004_datasets_app"),
        ("registry", "0003_datasets_app"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="experiment",
                    name="dataset_version",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="experiments",
                        to="datasets.datasetversion",
                    ),
                ),
                migrations.DeleteModel(name="Example"),
                migrations.DeleteModel(name="DatasetVersion"),
                migrations.DeleteModel(name="Dataset"),
            ],
        ),
    ]
