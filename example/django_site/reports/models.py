from django.db import models


class Report(models.Model):
    name = models.CharField(max_length=100)
    rows = models.IntegerField()
    created = models.DateTimeField(auto_now_add=True)
