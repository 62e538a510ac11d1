from django.db import migrations, models


def drop_self_moves(apps, schema_editor):
    """A self-move (v2 -> v2, written by two promotions at once before the decision moved
    under the lock) changed nothing but made every later rollback a no-op. Each is removed
    and the chain after it renumbered without a gap; a rollback's evidence follows the
    renumbering (one that rolled back a removed self-move points at the move before it,
    which set the holder it saw)."""
    AliasEvent = apps.get_model("registry", "AliasEvent")
    selves = AliasEvent.objects.filter(from_version=models.F("to_version"))
    for model_id, alias in set(selves.values_list("registered_model_id", "alias")):
        events = list(
            AliasEvent.objects.filter(registered_model_id=model_id, alias=alias).order_by(
                "sequence"
            )
        )
        kept, renumbered = [], {}
        for event in events:
            if event.from_version_id == event.to_version_id:
                event.delete()
            else:
                kept.append(event)
            renumbered[event.sequence] = len(kept)
        for event in kept:  # past the largest old number first: no two rows share one
            event.sequence += len(events)
            event.save(update_fields=["sequence"])
        for number, event in enumerate(kept, start=1):
            event.sequence = number
            if "rolled_back_event" in event.evidence:
                event.evidence["rolled_back_event"] = renumbered.get(
                    event.evidence["rolled_back_event"], event.evidence["rolled_back_event"]
                )
            event.save(update_fields=["sequence", "evidence"])


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0004_tracked_runs"),
    ]

    operations = [migrations.RunPython(drop_self_moves, migrations.RunPython.noop)]
