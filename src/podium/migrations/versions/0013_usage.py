"""recorded usage: content hits (and visits) and interactive app sessions

Revision ID: 0013_usage
Revises: 0012_oauth_integrations
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op


revision = '0013_usage'
down_revision = '0012_oauth_integrations'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'content_hits',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('content_guid', sa.String(length=36), nullable=False),
        sa.Column('user_guid', sa.String(length=36), nullable=True),
        sa.Column('bundle_id', sa.Integer(), nullable=True),
        sa.Column('time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('query', sa.Text(), nullable=True),
        sa.Column('user_agent', sa.Text(), nullable=False),
        sa.Column('sec_fetch_dest', sa.String(length=32), nullable=True),
        sa.Column('sec_fetch_site', sa.String(length=32), nullable=True),
        sa.Column('visit', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('content_hits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_content_hits_content_guid'), ['content_guid'], unique=False)
        batch_op.create_index(batch_op.f('ix_content_hits_time'), ['time'], unique=False)
    op.create_table(
        'app_sessions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=36), nullable=False),
        sa.Column('content_guid', sa.String(length=36), nullable=False),
        sa.Column('user_guid', sa.String(length=36), nullable=True),
        sa.Column('bundle_id', sa.Integer(), nullable=True),
        sa.Column('started', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('key'),
    )
    with op.batch_alter_table('app_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_app_sessions_content_guid'), ['content_guid'], unique=False)
        batch_op.create_index(batch_op.f('ix_app_sessions_started'), ['started'], unique=False)


def downgrade() -> None:
    op.drop_table('app_sessions')
    op.drop_table('content_hits')
