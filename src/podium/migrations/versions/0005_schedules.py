"""schedules: when rendered content renders again

Revision ID: 0005_schedules
Revises: 0004_renderings
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import podium.store.models


revision = '0005_schedules'
down_revision = '0004_renderings'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('schedules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content_id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('schedule', sa.Text(), nullable=False),
    sa.Column('start_time', podium.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('next_run', podium.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('email', sa.Boolean(), nullable=False),
    sa.Column('activate', sa.Boolean(), nullable=False),
    sa.Column('created_time', podium.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_time', podium.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['content_id'], ['content.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('content_id')
    )
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_schedules_next_run'), ['next_run'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('schedules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_schedules_next_run'))
    op.drop_table('schedules')
