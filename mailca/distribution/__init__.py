"""Getting the root to users: bundle (files + HTML page) and trust install."""
