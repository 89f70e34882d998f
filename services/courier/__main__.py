from shared.runtime import serve

from .app import build
from .settings import CourierSettings

settings = CourierSettings()
serve(build(settings), settings)
