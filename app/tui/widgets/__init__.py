"""Small widgets the panes and screens share."""
