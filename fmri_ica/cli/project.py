"""Project the per-class saliency maps onto the atlas as 4D NIfTI images across time.

Writes maps/<name>/: 4D maps (x, y, z, time; pixdim[4] = sample TR), time-averaged 3D
maps and time-binned maps, each with a JSON sidecar."""

from ._common import stage_command

add_arguments, run = stage_command("project")
