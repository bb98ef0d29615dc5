"""Local fakes of the outside services, for development and tests; never imported by the product."""
