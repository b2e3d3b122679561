<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- sentinel2:biophysical QUALITY: the single flags in colour (clear pixels transparent); combinations of flags and the per-variable out-of-range bits (512 and up) are left uncoloured: read the band's BIT_n metadata. -->
<qgis version="3.22.0" styleCategories="Symbology">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
        <paletteEntry value="0" color="#000000" alpha="0" label="0 clear"/>
        <paletteEntry value="1" color="#000000" alpha="255" label="1 no data"/>
        <paletteEntry value="2" color="#ff0000" alpha="255" label="2 saturated or defective"/>
        <paletteEntry value="4" color="#ffffff" alpha="255" label="4 cloud"/>
        <paletteEntry value="8" color="#64c8ff" alpha="255" label="8 cirrus"/>
        <paletteEntry value="16" color="#643200" alpha="255" label="16 cloud shadow"/>
        <paletteEntry value="32" color="#ff96ff" alpha="255" label="32 snow or ice"/>
        <paletteEntry value="64" color="#0000ff" alpha="255" label="64 water"/>
        <paletteEntry value="128" color="#ff8c00" alpha="255" label="128 input outside the definition domain"/>
        <paletteEntry value="256" color="#ffff00" alpha="255" label="256 an output clipped to its range"/>
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast gamma="1" brightness="0" contrast="0"/>
    <huesaturation saturation="0" grayscaleMode="0" invertColors="0" colorizeOn="0" colorizeRed="255" colorizeGreen="128" colorizeBlue="128" colorizeStrength="100"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
