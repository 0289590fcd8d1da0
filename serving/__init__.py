"""The online layer: cached state + subject-pin context -> contextual user embedding -> the
index of the same model version -> candidates (see DESIGN.md, "Serving")."""
