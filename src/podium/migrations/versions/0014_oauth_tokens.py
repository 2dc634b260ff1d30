"""A viewer's tokens from an OAuth integration's provider, encrypted

Revision ID: 0014_oauth_tokens
Revises: 0013_usage
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = '0014_oauth_tokens'
down_revision = '0013_usage'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'oauth_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('integration_id', sa.Integer(), nullable=False),
        sa.Column('access_token_encrypted', sa.LargeBinary(), nullable=False),
        sa.Column('refresh_token_encrypted', sa.LargeBinary(), nullable=True),
        sa.Column('token_type', sa.String(length=64), nullable=False),
        sa.Column('expires_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_time', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['integration_id'], ['oauth_integrations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user_id', 'integration_id', name='uq_oauth_token'),
    )


def downgrade() -> None:
    op.drop_table('oauth_tokens')
