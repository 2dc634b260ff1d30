"""renderings: whether a rendering may be served (schedules with activate false)

Revision ID: 0007_rendering_activated
Revises: 0005_schedules
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0007_rendering_activated'
down_revision = '0005_schedules'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('renderings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activated', sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table('renderings', schema=None) as batch_op:
        batch_op.drop_column('activated')
