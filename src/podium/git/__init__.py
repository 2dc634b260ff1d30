"""Git-backed publishing: :mod:`.remote` runs git; :mod:`.publish` turns a commit into a
deployed bundle, follows branches and answers push webhooks."""
