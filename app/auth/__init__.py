"""Keys and roles: hashed API keys with a role and dataset grants, the review page's session,
and the one access dependency every route carries."""
