"""package environments (runtime caches) and the packages installed in each

Revision ID: 0011_packages
Revises: 0010_groups_tags_vanity
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op


revision = '0011_packages'
down_revision = '0010_groups_tags_vanity'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'package_environments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('fingerprint', sa.String(length=64), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('language', sa.String(length=16), nullable=False),
        sa.Column('language_version', sa.String(length=32), nullable=False),
        sa.Column('image_name', sa.String(length=512), nullable=False),
        sa.Column('retired', sa.Boolean(), nullable=False),
        sa.Column('created_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('path'),
    )
    with op.batch_alter_table('package_environments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_package_environments_fingerprint'), ['fingerprint'], unique=False)
    op.create_table(
        'environment_packages',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('environment_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=256), nullable=False),
        sa.Column('version', sa.String(length=128), nullable=False),
        sa.Column('hash', sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(['environment_id'], ['package_environments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('environment_packages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_environment_packages_environment_id'), ['environment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_environment_packages_name'), ['name'], unique=False)
    op.create_table(
        'bundle_environments',
        sa.Column('bundle_id', sa.Integer(), nullable=False),
        sa.Column('environment_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['bundle_id'], ['bundles.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['environment_id'], ['package_environments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('bundle_id', 'environment_id'),
    )
    with op.batch_alter_table('bundle_environments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bundle_environments_environment_id'), ['environment_id'], unique=False)


def downgrade() -> None:
    op.drop_table('bundle_environments')
    op.drop_table('environment_packages')
    op.drop_table('package_environments')
