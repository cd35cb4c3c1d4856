"""Migration revisions. A package so that setuptools ships them with jukebot."""
