"""kubernetes placement: GPU limits and placement of content, placement of environments

Revision ID: 0010_kubernetes_placement
Revises: 0009_audit_log_and_auth_failures (and needs 0003_environments)
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op


revision = '0010_kubernetes_placement'
down_revision = '0009_audit_log_and_auth_failures'
branch_labels = None
depends_on = '0003_environments'  # the environments table


def upgrade() -> None:
    with op.batch_alter_table('content', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nvidia_gpu_limit', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('amd_gpu_limit', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('kubernetes_placement', sa.JSON(), nullable=True))
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('placement', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('environments', schema=None) as batch_op:
        batch_op.drop_column('placement')
    with op.batch_alter_table('content', schema=None) as batch_op:
        batch_op.drop_column('kubernetes_placement')
        batch_op.drop_column('amd_gpu_limit')
        batch_op.drop_column('nvidia_gpu_limit')
