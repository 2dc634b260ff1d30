"""node ownership: the node of each job, task and rendering; node heartbeats; duty leases

Revision ID: 0011_node_ownership
Revises: 0010_groups_tags_vanity
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op


revision = '0011_node_ownership'
down_revision = '0010_groups_tags_vanity'
branch_labels = None
depends_on = '0004_renderings'  # the renderings table


def upgrade() -> None:
    for table in ('jobs', 'tasks'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('node_id', sa.String(length=64), nullable=True))
            batch_op.create_index(f'ix_{table}_node_id', ['node_id'], unique=False)
    with op.batch_alter_table('renderings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node_id', sa.String(length=64), nullable=True))
    op.create_table(
        'nodes',
        sa.Column('node_id', sa.String(length=64), nullable=False),
        sa.Column('hostname', sa.String(length=256), nullable=False),
        sa.Column('started_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('claimed_time', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('node_id'),
    )
    op.create_table(
        'leases',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('holder', sa.String(length=64), nullable=False),
        sa.Column('expires_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('acquired_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )


def downgrade() -> None:
    op.drop_table('leases')
    op.drop_table('nodes')
    with op.batch_alter_table('renderings', schema=None) as batch_op:
        batch_op.drop_column('node_id')
    for table in ('tasks', 'jobs'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f'ix_{table}_node_id')
            batch_op.drop_column('node_id')
