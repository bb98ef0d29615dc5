"""store settings: each store's own issuing settings over the environment's

Revision ID: 2b0d98ff8b84
Revises: 669d3332c679
Create Date: 2026-11-24 06:15:55.754058

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '2b0d98ff8b84'
down_revision = '669d3332c679'
branch_labels = None
depends_on = None


def upgrade():
    # Existing stores start with no settings of their own; the default only fills them in.
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings', sa.JSON(), server_default='{}', nullable=False))
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.alter_column('settings', server_default=None)



def downgrade():
    with op.batch_alter_table('stores', schema=None) as batch_op:
        batch_op.drop_column('settings')

