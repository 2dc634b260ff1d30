"""OAuth integrations and their content associations

Revision ID: 0012_oauth_integrations
Revises: 0011_packages
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op


revision = '0012_oauth_integrations'
down_revision = '0011_packages'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'oauth_integrations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('guid', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=256), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('template', sa.String(length=64), nullable=False),
        sa.Column('auth_type', sa.String(length=64), nullable=False),
        sa.Column('config', sa.JSON(), nullable=False),
        sa.Column('client_secret_encrypted', sa.LargeBinary(), nullable=True),
        sa.Column('created_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('guid'),
    )
    op.create_table(
        'oauth_associations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('content_id', sa.Integer(), nullable=False),
        sa.Column('integration_id', sa.Integer(), nullable=False),
        sa.Column('created_time', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['content_id'], ['content.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['integration_id'], ['oauth_integrations.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('content_id', 'integration_id', name='uq_oauth_association'),
    )
    with op.batch_alter_table('oauth_associations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_associations_content_id'), ['content_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_oauth_associations_integration_id'), ['integration_id'], unique=False)


def downgrade() -> None:
    op.drop_table('oauth_associations')
    op.drop_table('oauth_integrations')
