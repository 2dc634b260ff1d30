"""Browser pages: sign-in and sign-out (the dashboard builds on these)."""
