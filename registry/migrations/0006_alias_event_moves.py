from django.db import migrations, models


class Migration(migrations.Migration):
    # Apart from 0005: PostgreSQL alters no table with the row changes' triggers pending.
    dependencies = [("registry", "0005_drop_self_moves")]

    operations = [
        migrations.AddConstraint(
            model_name="aliasevent",
            constraint=models.CheckConstraint(
                condition=models.Q(("from_version", models.F("to_version")), _negated=True),
                name="alias_event_moves",
            ),
        ),
    ]
