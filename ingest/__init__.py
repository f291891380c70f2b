"""From lecture files to a searchable library on disk. Never imports `app`."""
