"""`remi`: the command line, the composition root above remi_tf, pipelines and export (it imports all
three; none of them imports it)."""
