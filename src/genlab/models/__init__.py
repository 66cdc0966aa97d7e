"""Model families: one file each; see base.GenerativeModel for the interface."""
