"""usage spool chunks already imported (recorded usage goes through a spool)

Revision ID: 0015_usage_imports
Revises: 0014_oauth_tokens
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op


revision = '0015_usage_imports'
down_revision = '0014_oauth_tokens'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'usage_imports',
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('imported', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    with op.batch_alter_table('usage_imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_usage_imports_imported'), ['imported'], unique=False)


def downgrade() -> None:
    op.drop_table('usage_imports')
