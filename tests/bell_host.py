"""A sample host application for the bell's browser tests: the project's URLs
plus one plain page of "the host app" that includes ``{% notify_bell %}``."""

from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import include, path

HOST_PAGE = """{% load notify_bell %}<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Shop</title>
<style>
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; background: #f6f8fa; }
  header { display: flex; align-items: center; gap: 16px; padding: 8px 24px;
           background: #24292f; color: #fff; }
  header strong { flex: 1; }
  notify-inbox { --notify-bell-fg: #fff; }
  main { padding: 24px; }
</style></head>
<body>
  <header><strong>Shop</strong><a href="#" style="color:#fff">Orders</a>{% notify_bell %}</header>
  <main><h1>Your orders</h1><p>A page of the host application.</p></main>
</body></html>"""


def host_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(engines["django"].from_string(HOST_PAGE).render({}, request))


urlpatterns = [
    path("host/", host_page, name="bell-host"),
    path("", include("notify.project.urls")),
]
