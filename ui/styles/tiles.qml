<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<!-- Sentinel-2 tiles: outline only (the imagery underneath stays visible), labelled with tile_id. -->
<qgis version="3.22.0" styleCategories="Symbology|Labeling" labelsEnabled="1">
  <renderer-v2 type="singleSymbol" symbollevels="0" forceraster="0" enableorderby="0">
    <symbols>
      <symbol type="fill" name="0" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
            <Option type="QString" name="style" value="no"/>
            <Option type="QString" name="color" value="0,0,0,0"/>
            <Option type="QString" name="outline_style" value="solid"/>
            <Option type="QString" name="outline_color" value="214,39,40,255"/>
            <Option type="QString" name="outline_width" value="0.5"/>
            <Option type="QString" name="outline_width_unit" value="MM"/>
            <Option type="QString" name="joinstyle" value="miter"/>
          </Option>
        </layer>
      </symbol>
    </symbols>
  </renderer-v2>
  <labeling type="simple">
    <settings calloutType="simple">
      <text-style fieldName="tile_id" isExpression="0" fontSize="9" fontSizeUnit="Point" fontWeight="75"
                  textColor="214,39,40,255" textOpacity="1" namedStyle="Bold">
        <text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" bufferColor="255,255,255,255"
                     bufferOpacity="0.8" bufferNoFill="1" bufferJoinStyle="128"/>
      </text-style>
      <placement placement="1" centroidInside="1" centroidWhole="0" fitInPolygonOnly="0" priority="5"/>
      <rendering drawLabels="1" obstacle="0" displayAll="0" upsidedownLabels="0" labelPerPart="0"
                 scaleVisibility="0" limitNumLabels="0" maxNumLabels="2000"/>
    </settings>
  </labeling>
</qgis>
