"""Interrogation: a prompt from an image (A1111's /sdapi/v1/interrogate)."""

from __future__ import annotations

from fastapi import APIRouter

from sdstudio.engine.request import decode_base64_image
from sdstudio.server import api_models as m
from sdstudio.server.deps import AppDep, ClientQueueDep, wait_for

router = APIRouter()


@router.post("/interrogate", response_model=m.InterrogateResponse)
async def interrogate(body: m.InterrogateRequest, app: AppDep, queue: ClientQueueDep):
    # A1111 decodes at the API edge and runs the interrogator under the queue lock.
    image = decode_base64_image(body.image, "image", app.settings.img_max_decode_mp).convert("RGB")
    job = queue.submit("interrogate", lambda job: app.interrogator.interrogate(image, body.model))
    return m.InterrogateResponse(caption=await wait_for(job))
