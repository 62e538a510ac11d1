"""The dataset models now live in the datasets app (same tables): only the state changes."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0001_initial"),
        ("evaluation", "0003_heartbeat"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.AlterField(
                    model_name="evaluationrun",
                    name="dataset_version",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="evaluations",
                        to="datasets.datasetversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="comparison",
                    name="dataset_version",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="comparisons",
                        to="datasets.datasetversion",
                    ),
                ),
                migrations.AlterField(
                    model_name="sampleresult",
                    name="example",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="datasets.example",
                    ),
                ),
                migrations.AlterField(
                    model_name="reviewpair",
                    name="example",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="datasets.example",
                    ),
                ),
            ],
        ),
    ]
