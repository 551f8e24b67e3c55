"""HTTP edges of the catalog: parse, call one use case, map the result."""
