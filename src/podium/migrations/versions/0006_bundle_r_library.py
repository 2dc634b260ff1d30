"""bundles: the R installation and R package library a bundle runs with

Revision ID: 0006_bundle_r_library
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0006_bundle_r_library'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bundles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('r_path', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('r_library', sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('bundles', schema=None) as batch_op:
        batch_op.drop_column('r_library')
        batch_op.drop_column('r_path')
