"""renderings: stored output versions of rendered content

Revision ID: 0004_renderings
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import podium.store.models


revision = '0004_renderings'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('renderings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content_id', sa.Integer(), nullable=False),
    sa.Column('bundle_id', sa.Integer(), nullable=False),
    sa.Column('job_key', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('primary_file', sa.String(length=1024), nullable=False),
    sa.Column('start_time', podium.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('end_time', podium.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['content_id'], ['content.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('renderings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_renderings_content_id'), ['content_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('renderings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_renderings_content_id'))
    op.drop_table('renderings')
