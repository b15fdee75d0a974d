"""Write the config.json of lllyasviel/control_v11p_sd15_canny as diffusers' ControlNetModel.from_unet builds it.

The published file (996 B) could not be recovered verbatim (see sdrag/assets/hub/SOURCES.md), so the `tiny`
preset and the test hub use this reconstruction from the real SD1.5 unet config. Run from the repo root.
"""

from pathlib import Path

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

HUB = Path(__file__).resolve().parent.parent / "sdrag" / "assets" / "hub"


def main() -> None:
    """Build the ControlNet on the meta device (no weights) and write its config next to the other metadata."""
    unet_config = UNet2DConditionModel.load_config(HUB / "stable-diffusion-v1-5" / "stable-diffusion-v1-5" / "unet")
    with torch.device("meta"):
        controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_config(unet_config))
    target = HUB / "lllyasviel" / "control_v11p_sd15_canny" / "config.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(controlnet.to_json_string())
    print(target)


if __name__ == "__main__":
    main()
