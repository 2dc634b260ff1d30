"""audit_logs: who did what; auth_failures: failed sign-ins and API keys being throttled

Revision ID: 0009_audit_log_and_auth_failures
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op


revision = '0009_audit_log_and_auth_failures'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'audit_logs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=True),
        sa.Column('user_guid', sa.String(length=36), nullable=True),
        sa.Column('user_description', sa.String(length=512), nullable=False),
        sa.Column('action', sa.String(length=64), nullable=False),
        sa.Column('event_description', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_logs_time'), ['time'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_logs_user_guid'), ['user_guid'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_logs_action'), ['action'], unique=False)
    op.create_table(
        'auth_failures',
        sa.Column('key', sa.String(length=320), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('last_failure_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('blocked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('updated_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    with op.batch_alter_table('auth_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_failures_updated_time'), ['updated_time'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('auth_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_failures_updated_time'))
    op.drop_table('auth_failures')
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_logs_action'))
        batch_op.drop_index(batch_op.f('ix_audit_logs_user_guid'))
        batch_op.drop_index(batch_op.f('ix_audit_logs_time'))
    op.drop_table('audit_logs')
