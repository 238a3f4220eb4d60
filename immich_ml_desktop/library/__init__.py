"""The local library: the SQLite store, its sources (local folders, an Immich server) and search.

Start at `LibraryStore` (store.py); `FolderSource` (folders.py) scans and decodes local photos;
`ClipSearch` (search.py) ranks assets for a phrase.
"""
