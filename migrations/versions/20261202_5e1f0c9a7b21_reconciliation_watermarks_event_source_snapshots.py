"""reconciliation: watermarks per store, how an event reached us, a document's platform snapshot

Revision ID: 5e1f0c9a7b21
Revises: c166e193e709
Create Date: 2026-12-02 01:45:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5e1f0c9a7b21'
down_revision = 'c166e193e709'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'watermarks',
        sa.Column('store_id', sa.Integer(), nullable=False),
        sa.Column('reached', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_run_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_found', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_watermarks_store_id_stores')),
        sa.PrimaryKeyConstraint('store_id', name=op.f('pk_watermarks')),
    )
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=10), server_default='webhook', nullable=False))
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snapshot', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('documents', schema=None) as batch_op:
        batch_op.drop_column('snapshot')
    with op.batch_alter_table('webhook_events', schema=None) as batch_op:
        batch_op.drop_column('source')
    op.drop_table('watermarks')
