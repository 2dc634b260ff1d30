"""git-backed content: repository locations with their poll state, git host credentials

Revision ID: 0011_git_repositories
Revises: 0010_groups_tags_vanity
Create Date: 2026-12-06

A bundle's source (``source``, ``source_repo``, ``source_branch``, ``source_commit``)
lives in the bundle's existing ``metadata`` JSON column, as uploads already store it.
"""

import sqlalchemy as sa
from alembic import op


revision = '0011_git_repositories'
down_revision = '0010_groups_tags_vanity'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'git_repositories',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('content_id', sa.Integer(), nullable=False),
        sa.Column('repository', sa.String(length=2048), nullable=False),
        sa.Column('branch', sa.String(length=255), nullable=False),
        sa.Column('directory', sa.String(length=1024), nullable=False),
        sa.Column('polling', sa.Boolean(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('last_known_commit', sa.String(length=64), nullable=False),
        sa.Column('last_fetched_time', sa.DateTime(timezone=True), nullable=True),
        sa.Column('webhook_secret_encrypted', sa.LargeBinary(), nullable=True),
        sa.Column('lease_node', sa.String(length=64), nullable=True),
        sa.Column('lease_expires', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_time', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['content_id'], ['content.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('content_id'),
    )
    op.create_table(
        'git_credentials',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('username', sa.String(length=255), nullable=False),
        sa.Column('secret_encrypted', sa.LargeBinary(), nullable=False),
        sa.Column('created_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('host'),
    )


def downgrade() -> None:
    op.drop_table('git_credentials')
    op.drop_table('git_repositories')
