"""Security: who a caller is (API keys, access and refresh tokens), what its role allows (RBAC with tenants
as domains), and how much it may ask (request rates, concurrent runs, the brake on guessing keys)."""
