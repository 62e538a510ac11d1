"""Dataset, DatasetVersion and Example move from experiments/ to this app without moving a
row: the state changes, the tables (experiments_dataset, ...) stay. Content types follow, so
permissions and admin history keep pointing at the same models."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MOVED = ["dataset", "datasetversion", "example"]


def move_content_types(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="experiments", model__in=MOVED).update(
        app_label="datasets"
    )


def restore_content_types(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="datasets", model__in=MOVED).update(
        app_label="experiments"
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("finetune_hub", "0001_initial"),
        ("experiments", "0002_training"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='Dataset',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=100)),
                        ('task', models.CharField(choices=[('instruction', 'Instruction'), ('chat', 'Chat'), ('completion', 'Completion'), ('classification', 'Classification'), ('preference', 'Preference')], max_length=16)),
                        ('description', models.TextField(blank=True)),
                        ('labels', models.JSONField(blank=True, default=list)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('created_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, to=settings.AUTH_USER_MODEL)),
                        ('team', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='datasets', to='finetune_hub.team')),
                    ],
                    options={
                        'db_table': 'experiments_dataset',
                        'ordering': ['team__name', 'name'],
                    },
                ),
                migrations.CreateModel(
                    name='DatasetVersion',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('number', models.PositiveIntegerField(blank=True, null=True)),
                        ('status', models.CharField(choices=[('draft', 'Draft'), ('published', 'Published')], default='published', max_length=10)),
                        ('format', models.CharField(choices=[('instruction', 'Instruction'), ('chat', 'Chat'), ('completion', 'Completion'), ('classification', 'Classification'), ('preference', 'Preference')], max_length=16)),
                        ('sha256', models.CharField(blank=True, max_length=64)),
                        ('counts', models.JSONField(default=dict, help_text='examples per split')),
                        ('validation_report', models.JSONField(default=dict)),
                        ('source_filename', models.CharField(blank=True, max_length=255)),
                        ('source_path', models.CharField(blank=True, help_text='under ARTIFACT_ROOT', max_length=500)),
                        ('message', models.TextField(blank=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('published_at', models.DateTimeField(blank=True, null=True)),
                        ('created_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('dataset', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='versions', to='datasets.dataset')),
                        ('parent', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='children', to='datasets.datasetversion')),
                        ('published_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'experiments_datasetversion',
                        'ordering': ['dataset', '-number'],
                    },
                ),
                migrations.CreateModel(
                    name='Example',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('position', models.PositiveIntegerField(help_text='order in the version')),
                        ('source_line', models.PositiveIntegerField(blank=True, null=True)),
                        ('split', models.CharField(choices=[('train', 'Train'), ('eval', 'Eval'), ('test', 'Test')], max_length=5)),
                        ('fields', models.JSONField()),
                        ('content_hash', models.CharField(max_length=64)),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('approved', 'Approved'), ('rejected', 'Rejected'), ('flagged', 'Flagged')], default='pending', max_length=10)),
                        ('labels', models.JSONField(blank=True, default=list, help_text='annotation tags')),
                        ('notes', models.TextField(blank=True)),
                        ('flag_reason', models.CharField(blank=True, max_length=255)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('annotator', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='assigned_examples', to=settings.AUTH_USER_MODEL)),
                        ('reviewed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('version', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='examples', to='datasets.datasetversion')),
                    ],
                    options={
                        'db_table': 'experiments_example',
                        'ordering': ['version', 'position'],
                    },
                ),
                migrations.AddConstraint(
                    model_name='dataset',
                    constraint=models.UniqueConstraint(fields=('team', 'name'), name='dataset_name_unique_in_team'),
                ),
                migrations.AddConstraint(
                    model_name='datasetversion',
                    constraint=models.UniqueConstraint(fields=('dataset', 'number'), name='version_number_unique'),
                ),
                migrations.AddConstraint(
                    model_name='datasetversion',
                    constraint=models.UniqueConstraint(condition=models.Q(('status', 'draft')), fields=('dataset',), name='one_draft_per_dataset'),
                ),
                migrations.AddConstraint(
                    model_name='datasetversion',
                    constraint=models.CheckConstraint(condition=models.Q(models.Q(('number__isnull', True), ('status', 'draft')), models.Q(('number__isnull', False), ('status', 'published')), _connector='OR'), name='published_versions_have_a_number'),
                ),
                migrations.AddIndex(
                    model_name='example',
                    index=models.Index(fields=['version', 'split'], name='experiments_version_dcab94_idx'),
                ),
                migrations.AddIndex(
                    model_name='example',
                    index=models.Index(fields=['version', 'status'], name='experiments_version_f8b60f_idx'),
                ),
                migrations.AddConstraint(
                    model_name='example',
                    constraint=models.UniqueConstraint(fields=('version', 'position'), name='example_position_unique'),
                ),
    
            ],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
