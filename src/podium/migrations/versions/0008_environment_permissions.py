"""environment_permissions: the users allowed to deploy with an execution environment

Revision ID: 0008_environment_permissions
Revises: 0003_environments
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0008_environment_permissions'
down_revision = '0003_environments'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'environment_permissions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('guid', sa.String(length=36), nullable=False),
        sa.Column('environment_id', sa.Integer(), nullable=False),
        sa.Column('user_guid', sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(['environment_id'], ['environments.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('guid'),
        sa.UniqueConstraint('environment_id', 'user_guid', name='uq_environment_permission_user'),
    )
    with op.batch_alter_table('environment_permissions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_environment_permissions_environment_id'), ['environment_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('environment_permissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_environment_permissions_environment_id'))
    op.drop_table('environment_permissions')
