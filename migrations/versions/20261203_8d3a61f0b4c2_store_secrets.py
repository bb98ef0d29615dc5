"""stores: their own secrets and API keys, encrypted with SECRET_KEY, and when they were last changed

Revision ID: 8d3a61f0b4c2
Revises: 5e1f0c9a7b21
Create Date: 2026-12-03 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8d3a61f0b4c2'
down_revision = '5e1f0c9a7b21'
branch_labels = None
depends_on = None


def upgrade():
    # Existing stores get no secrets of their own: they go on with the environment's, as before.
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('secrets', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.drop_column('updated_at')
        batch_op.drop_column('secrets')
