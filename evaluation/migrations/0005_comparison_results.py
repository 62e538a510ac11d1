"""A comparison keeps its automatic result, computed once when its evaluations have finished.
Comparisons made before are scored the first time they are read."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluation", "0004_datasets_app"),
    ]

    operations = [
        migrations.AddField(
            model_name="comparison",
            name="results",
            field=models.JSONField(
                blank=True, default=dict, help_text="the paired bootstrap tests"
            ),
        ),
        migrations.AddField(
            model_name="comparison",
            name="scored_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
