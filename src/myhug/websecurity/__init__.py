"""The one web layer of the webmail and the staff desk: server-side sessions with a role, login
throttling, one-time codes, CSRF and Origin checks, security headers, redirects and page rendering."""
