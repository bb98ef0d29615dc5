"""write_backs: each done document's number and PDF link put on its shop order, as a step of its own

Revision ID: b4e8d2a6c913
Revises: a7c3e91d5b60
Create Date: 2026-12-05 09:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'b4e8d2a6c913'
down_revision = 'a7c3e91d5b60'
branch_labels = None
depends_on = None


def upgrade():
    # Documents done before this revision get no row: their orders are left as they are.
    op.create_table(
        'write_backs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('document_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('step', sa.String(length=20), nullable=True),
        sa.Column('pdf_url', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('job_id', sa.String(length=100), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('pending', 'pdf', 'done', 'failed', 'skipped')",
                           name=op.f('ck_write_backs_state')),
        sa.ForeignKeyConstraint(['document_id'], ['documents.id'],
                                name=op.f('fk_write_backs_document_id_documents')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_write_backs')),
        sa.UniqueConstraint('document_id', name=op.f('uq_write_backs_document_id')),
    )
    op.create_index('ix_write_backs_state', 'write_backs', ['state'], unique=False)


def downgrade():
    op.drop_index('ix_write_backs_state', table_name='write_backs')
    op.drop_table('write_backs')
