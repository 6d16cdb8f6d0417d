"""Training of the Bilsky stage: canal detector and MR/CT prototype graders (Hallinan 2022, 2023)."""
