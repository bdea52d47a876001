"""Archive collection: a channel's past streams and their chat, into PostgreSQL.

The seed project's collection notebooks, made robust. Read in pipeline order:
urls (which pages we may open, ids from links) -> discover (Selenium scrolls the streams page) ->
metadata (YouTube Data API, 50 ids a call) -> download (chat-downloader, saved in batches) ->
state (what the streams table says is left to do) -> collect (`donorcast collect` / `donorcast update`).
"""
