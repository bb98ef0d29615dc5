"""Everything that speaks InvoiceXpress: the HTTP client, request schemas, totals and the sandbox."""
