"""Pure geometry (positions, masks, patch placement) first, then samplers over nnU-Net datasets."""
