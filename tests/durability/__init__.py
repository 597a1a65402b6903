"""Durability tests: crashes, resumes and write failures against a real server."""
