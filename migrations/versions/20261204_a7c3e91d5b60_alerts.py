"""alerts: each problem told to the operator once, and how many orders reconciliation found no webhook brought

Revision ID: a7c3e91d5b60
Revises: 8d3a61f0b4c2
Create Date: 2026-12-04 09:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'a7c3e91d5b60'
down_revision = '8d3a61f0b4c2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'alerts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=40), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=False),
        sa.Column('occurrence', sa.Integer(), nullable=False),
        sa.Column('store_id', sa.Integer(), nullable=True),
        sa.Column('document_id', sa.Integer(), nullable=True),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sending_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('emailed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['document_id'], ['documents.id'], name=op.f('fk_alerts_document_id_documents')),
        sa.ForeignKeyConstraint(['store_id'], ['stores.id'], name=op.f('fk_alerts_store_id_stores')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
        sa.UniqueConstraint('kind', 'key', 'occurrence', name='uq_alerts_kind_key_occurrence'),
    )
    op.create_index('ix_alerts_unsent', 'alerts', ['sent_at', 'resolved_at'], unique=False)
    # Passes before this one counted no missed orders: none is assumed, so no old pass raises an alert.
    with op.batch_alter_table('watermarks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_missed', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('watermarks', schema=None) as batch_op:
        batch_op.drop_column('last_missed')
    op.drop_index('ix_alerts_unsent', table_name='alerts')
    op.drop_table('alerts')
