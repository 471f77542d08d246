"""The five panes of the main screen, one file each."""
